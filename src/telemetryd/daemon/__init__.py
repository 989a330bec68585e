"""The telemetryd daemon: listeners, journal, store, service integration."""
