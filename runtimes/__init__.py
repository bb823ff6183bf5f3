"""The device runtime: two programs (monitoring, inspection) on one shell, and the plugins they use.

Never imports torch or the exporters (a test enforces it); hardware libraries load only when a plugin opens.
"""
