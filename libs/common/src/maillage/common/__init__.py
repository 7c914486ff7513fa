"""maillage.common: the chassis every Maillage service stands on.

Small on purpose: settings, logging, telemetry, database, HTTP app factory and authentication.
"""
