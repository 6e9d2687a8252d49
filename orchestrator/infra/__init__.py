"""Infrastructure: settings, the embedded cluster, connections, migrations, secrets, links, logs, doctor."""
