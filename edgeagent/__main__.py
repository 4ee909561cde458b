from edgeagent.runtime.lean import start_up_gc

start_up_gc()  # before the imports: see edgeagent/runtime/lean.py
from edgeagent.cli import main  # noqa: E402

raise SystemExit(main())
