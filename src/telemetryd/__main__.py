"""`python -m telemetryd` runs the daemon in the foreground."""

from telemetryd.daemon.main import main

raise SystemExit(main())
