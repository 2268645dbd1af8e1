"""Processing: worker processes that read a complete study, check it (one patient, memory budget),
quantify it with :mod:`quant` and write its SEG, SR and summary; follow-up inputs from earlier
studies."""
