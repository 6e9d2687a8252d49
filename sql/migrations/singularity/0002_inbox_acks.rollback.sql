DROP TABLE outbox.inbox_acks;
