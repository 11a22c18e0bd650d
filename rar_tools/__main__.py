from rar_tools.cli import main

raise SystemExit(main())
