"""OS morphing of Windows guests, offline, through libguestfs.

``inspect`` reads what the guest is (product, version, build, architecture, control sets);
``checks`` refuses volumes that must not be changed offline (BitLocker, dynamic disks,
hibernated or dirty NTFS); ``registry`` edits the SYSTEM and SOFTWARE hives with libguestfs'
hivex calls; ``virtio`` finds drivers in a virtio-win tree or ISO; ``firstboot`` installs the
actions that can only run inside the booted guest; ``morpher`` puts them together.
"""
