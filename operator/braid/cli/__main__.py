from braid.cli.entry import main

main()
