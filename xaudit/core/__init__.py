"""What every part shares about a run's files, and nothing else.

    outputs    the run directory, atomic writes (write_json/csv/text/bytes), locks, records
    provenance config.resolved.yaml: the config as run, versions, seeds, device; resume checks
    runlog     run.log
    progress   bars on a terminal, a log line at least every 30 s elsewhere
    crash      crash files for unexpected errors (exit 3)
    bids       BIDS-derivative names for the attribution volumes (output_layout: bids)
    jsonable   the one conversion to JSON (NaN -> None)
    ids        file-name-safe subject ids
    versions   schema versions of every JSON artifact

`core` imports only `config`, `errors` and third-party packages (never `data`, `models`,
`attribution`, `analysis`, `stages` or `workflows`).
"""
