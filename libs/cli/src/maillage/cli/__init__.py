"""maillage.cli: the ``maillage`` command (development stack and operator tools)."""
