"""How builds are run: as a job under the build lock with a status file (jobs, lock, status), from
cron or by the daemon (daemon) on a schedule (schedule) and when the store changes (watch)."""
