"""OS morphing: change a migrated guest so that it boots on its destination.

``appliance`` opens the disks with libguestfs and inspects the OS; ``morph.morph_guest``
picks one morpher per family (``debian``, ``redhat``, ``suse``, ``windows``), runs it and then
the user's scripts (Windows: as first-boot actions).
"""
