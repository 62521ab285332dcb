from experiments.benchmarks.time_to_target.cli import main

main()
