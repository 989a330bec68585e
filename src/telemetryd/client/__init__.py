"""The telemetryctl client. Modules here never import the daemon."""
