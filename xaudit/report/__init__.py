def write_report(audit, cohort, config, run_dir):
    from xaudit.outputs import write_text
    write_text(run_dir / "report.md", "# TEMP\n")
    write_text(run_dir / "report.html", "<html>TEMP</html>")
