"""CentralCloud (database `centralcloud`): its SQL jobs, Git export and template distribution, statistics."""
