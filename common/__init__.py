"""Leaf modules every package may import (``fib/``, ``bfd/``, ``routing/``); they import none of them."""
