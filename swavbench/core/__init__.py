"""The ground floor: what every stage shares and nothing else (the typed config loader, state-file I/O,
paths, the durable writer, ranks and process groups, interrupts, the data root, result records and the
protocol registry's facts). It imports no stage; tests/swavbench/test_floors.py walks the imports."""
