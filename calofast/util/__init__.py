"""Small helpers every stage uses: atomic files, JSON of numbers, the device picker, logs."""
