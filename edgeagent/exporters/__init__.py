"""Exporters: `send()` one request upstream; the shared sender does everything else."""
