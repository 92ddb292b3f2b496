"""The ``inmesh`` command."""
