from tiltbench.cli import main

main()
