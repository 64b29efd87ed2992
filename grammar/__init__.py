"""Lark grammar of the fdsl language (data package)."""
