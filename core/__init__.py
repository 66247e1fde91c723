"""The bottom layer: errors, settings, the event-type table, typed records, log readers, Kafka helpers.

Nothing here imports ``schemas``, ``model``, ``streams`` or ``cli`` (an import-linter contract checks it).
"""
