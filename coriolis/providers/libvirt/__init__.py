"""The ``libvirt`` provider: KVM/QEMU hosts managed by libvirt as source and destination."""
