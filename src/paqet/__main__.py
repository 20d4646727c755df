from paqet.cli.main import main

raise SystemExit(main())
