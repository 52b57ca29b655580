from .cli import _module_main

_module_main()
