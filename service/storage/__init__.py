"""Storage: instance files on disk, the SQLite index (instances, studies, results, exports, study
facts), start-up reconciliation and retention."""
