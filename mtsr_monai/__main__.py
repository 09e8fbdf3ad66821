from mtsr_monai.cli import main

raise SystemExit(main())
