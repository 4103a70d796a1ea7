"""Command-line front end of wtransplant (installed as the ``wtransplant_cli`` package)."""
