from session_monitor.cli import main

main()
