from helpers.training.adapter import main

raise SystemExit(main())
