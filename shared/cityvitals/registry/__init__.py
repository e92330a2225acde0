"""The device registry (docs/registry.md): what an entry is, how files of entries are read,
and how entries are written. The API, the CLI and the simulator all register
devices through this package, so that each meets the same validation and the same
refusal of a kind change.
"""
