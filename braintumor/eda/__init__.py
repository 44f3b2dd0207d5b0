"""The pieces of `eda`: statistics (stats), confounds table (confound_report), figures, report.md."""
