"""Whole operations a user asks for, each wiring the stages in order:

    audit        run_audit: validate -> subject pass -> dataset-level stages (`finish`)
    finish       the dataset-level stages on the records of a run, then audit.json
    merge        shards -> one run;  rerender: the report of a finished run again
    submit       shards as a SLURM job array (submitit), then merge
    interrogate  interrogate a finished run and fold it into its audit.json
    compare      compare finished runs (compare.json / .md / .html)
"""
