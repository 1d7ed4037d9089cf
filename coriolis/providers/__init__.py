"""Provider plugins: one package per platform, registered under the ``coriolis.providers``
entry-point group."""
