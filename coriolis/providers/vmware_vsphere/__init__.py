"""The ``vmware_vsphere`` provider: vCenter and ESXi as a source (pyVmomi)."""
