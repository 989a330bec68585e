"""telemetryd: a local telemetry collector for AI coding agents."""

__version__ = "0.1.0"
