"""Files: checkpoints and training states (one key rule, one atomic writer, one prefix stripper, one
mismatch report), image files, and networks built from a zoo name or a checkpoint file."""
