from xaudit.cli import main

main()
