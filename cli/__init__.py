"""The top layer: the ``clickstream`` command, one click group for every command (:mod:`cli.main`)."""
