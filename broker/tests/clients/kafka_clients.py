"""Real Kafka clients against a running Keel (driven by broker/tests/kafka_clients.rs).

usage: kafka_clients.py {kafka-python|confluent|confluent-group} BOOTSTRAP TOPIC RECORDS

Creates TOPIC (3 partitions) with the client's admin API, produces RECORDS
records with acks=all and idempotence on, reads every partition back from
offset 0 and checks that every acknowledged record is there once, in order per
partition. Then deletes a scratch topic with the admin API, checks it is gone,
creates it again and checks it starts empty. confluent also produces a record
whose headers repeat a key and checks they are read back as sent, in order.
Exits 0 on success; prints what went wrong and exits 1 otherwise.

confluent-group: produces RECORDS records to TOPIC, consumes them with a
consumer group of two confluent-kafka consumers that commit synchronously,
checks that both had partitions and every record was read, then checks that
the group's committed offsets are the partitions' ends (a restarted consumer
would resume there), and that ListGroups and DescribeGroups know the group.
"""

import sys
import time

PARTITIONS = 3


def check(acked, consumed):
    """acked / consumed: {partition: [(offset, value), ...]} in offset order."""
    problems = []
    for partition, records in acked.items():
        seen = consumed.get(partition, [])
        seen_offsets = {offset: value for offset, value in seen}
        for offset, value in records:
            if seen_offsets.get(offset) != value:
                problems.append(f"partition {partition} offset {offset}: acknowledged {value!r}, read {seen_offsets.get(offset)!r}")
        values = [value for _, value in seen]
        if len(values) != len(set(values)):
            problems.append(f"partition {partition}: a record was read twice")
        order = [int(value.split(b"-")[1]) for value in values]
        if order != sorted(order):
            problems.append(f"partition {partition}: records out of order")
    return problems


def eventually(condition, seconds=30):
    """Metadata reaches every broker shortly after a change is acknowledged."""
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.2)
    return True


def kafka_python(bootstrap, topic, count):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=-1)])
    # The create is acknowledged by the broker that served it; another
    # broker's Metadata answer shows it once that broker applied it.
    if not eventually(lambda: topic in admin.list_topics()):
        return [f"{topic} not listed 30 s after create"]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    futures = [producer.send(topic, key=str(i % 7).encode(), value=f"kp-{i}".encode()) for i in range(count)]
    producer.flush(60)
    acked = {}
    for i, future in enumerate(futures):
        meta = future.get(timeout=60)
        acked.setdefault(meta.partition, []).append((meta.offset, f"kp-{i}".encode()))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    consumed, deadline = {}, time.time() + 60
    while sum(len(v) for v in consumed.values()) < count and time.time() < deadline:
        for partition, messages in consumer.poll(timeout_ms=1000).items():
            consumed.setdefault(partition.partition, []).extend((m.offset, m.value) for m in messages)
    consumer.close()
    problems = check(acked, consumed)
    scratch = f"{topic}-scratch"
    admin.create_topics([NewTopic(scratch, num_partitions=1, replication_factor=-1)])
    producer.send(scratch, value=b"old").get(timeout=60)
    admin.delete_topics([scratch])
    if not eventually(lambda: scratch not in admin.list_topics()):
        problems.append(f"{scratch} still listed 30 s after delete")
    admin.create_topics([NewTopic(scratch, num_partitions=1, replication_factor=-1)])
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partition = TopicPartition(scratch, 0)
    consumer.assign([partition])
    end = consumer.end_offsets([partition])[partition]
    if end != 0:
        problems.append(f"{scratch} created again holds {end} records of the deleted topic")
    consumer.close()
    producer.close()
    admin.close()
    return problems


def confluent(bootstrap, topic, count):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)]).values():
        future.result(60)
    if not eventually(lambda: topic in admin.list_topics(timeout=30).topics):
        return [f"{topic} not listed 30 s after create"]
    # No auto-create: this producer keeps refreshing the metadata of the
    # scratch topic it wrote to, and with auto-create on (librdkafka's
    # producer default) that re-creates the topic the moment it is deleted,
    # before the admin client creates it again (as Kafka would too).
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "allow.auto.create.topics": False})
    acked, errors = {}, []

    def delivered(error, message):
        if error is not None:
            errors.append(str(error))
        else:
            acked.setdefault(message.partition(), []).append((message.offset(), message.value()))

    for i in range(count):
        producer.produce(topic, key=str(i % 7).encode(), value=f"ck-{i}".encode(), on_delivery=delivered)
        producer.poll(0)
    if producer.flush(60) != 0:
        return ["records still unacknowledged after 60 s"]
    if errors:
        return [f"delivery failed: {errors[:3]}"]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-assign-only", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    consumed, deadline = {}, time.time() + 60
    while sum(len(v) for v in consumed.values()) < count and time.time() < deadline:
        message = consumer.poll(1)
        if message is None:
            continue
        if message.error():
            return [f"consumer error: {message.error()}"]
        consumed.setdefault(message.partition(), []).append((message.offset(), message.value()))
    consumer.close()
    problems = check(acked, consumed)
    scratch = f"{topic}-scratch"
    for future in admin.create_topics([NewTopic(scratch, num_partitions=1)]).values():
        future.result(60)
    producer.produce(scratch, value=b"old")
    producer.flush(60)
    for future in admin.delete_topics([scratch]).values():
        future.result(60)
    if not eventually(lambda: scratch not in admin.list_topics(timeout=30).topics):
        problems.append(f"{scratch} still listed 30 s after delete")
    for future in admin.create_topics([NewTopic(scratch, num_partitions=1)]).values():
        future.result(60)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-assign-only", "enable.auto.commit": False})
    ends = []

    def end_known():
        try:
            ends.append(consumer.get_watermark_offsets(TopicPartition(scratch, 0), timeout=5)[1])
            return True
        except Exception:  # the new topic has not reached every broker's metadata yet
            return False

    if not eventually(end_known):
        problems.append(f"{scratch} created again has no readable partition 0 after 30 s")
    elif ends[-1] != 0:
        problems.append(f"{scratch} created again holds {ends[-1]} records of the deleted topic")
    consumer.close()
    return problems + confluent_headers(bootstrap, admin, producer, f"{topic}-headers")


def confluent_headers(bootstrap, admin, producer, topic):
    """Kafka headers are an ordered list and a key may repeat: read back as sent."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import NewTopic

    sent = [("dup", b"v0"), ("dup", b"v1"), ("k2", b"x"), ("dup", b"v3"), ("empty", None)]
    for future in admin.create_topics([NewTopic(topic, num_partitions=1)]).values():
        future.result(60)
    producer.produce(topic, value=b"with-headers", headers=sent)
    if producer.flush(60) != 0:
        return [f"{topic}: the record with headers was not acknowledged in 60 s"]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-assign-only", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    deadline, message = time.time() + 60, None
    while message is None and time.time() < deadline:
        message = consumer.poll(1)
    consumer.close()
    if message is None or message.error():
        return [f"{topic}: the record with headers was not read back: {message and message.error()}"]
    if message.headers() != sent:
        return [f"{topic}: headers sent {sent!r}, read back {message.headers()!r}"]
    return []


def commit_positions(consumer):
    """Commits what the consumer has read; nothing read is not an error."""
    from confluent_kafka import KafkaError, KafkaException

    try:
        consumer.commit(asynchronous=False)
    except KafkaException as error:
        if error.args[0].code() != KafkaError._NO_OFFSET:
            raise


def confluent_group(bootstrap, topic, count):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)]).values():
        future.result(60)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=f"g-{i}".encode())
        producer.poll(0)
    if producer.flush(60) != 0:
        return ["records still unacknowledged after 60 s"]
    group = f"{topic}-group"
    config = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    consumers = [Consumer(dict(config, **{"client.id": f"member-{n}"})) for n in range(2)]
    for consumer in consumers:
        consumer.subscribe([topic])
    seen, had_partitions, deadline = set(), [False, False], time.time() + 120
    while len(seen) < count and time.time() < deadline:
        for n, consumer in enumerate(consumers):
            messages = consumer.consume(num_messages=500, timeout=0.2)
            if consumer.assignment():
                had_partitions[n] = True
            for message in messages:
                if message.error():
                    return [f"consumer {n} error: {message.error()}"]
                seen.add(message.value())
            if messages:
                consumer.commit(message=messages[-1], asynchronous=False)
    for consumer in consumers:
        commit_positions(consumer)
    problems = []
    if len(seen) < count:
        problems.append(f"the group read {len(seen)} of {count} records in 120 s")
    if not all(had_partitions):
        problems.append(f"both members should have had partitions: {had_partitions}")
    listed = admin.list_consumer_groups().result(30)
    if group not in [g.group_id for g in listed.valid]:
        problems.append(f"ListGroups does not list {group}")
    described = admin.describe_consumer_groups([group])[group].result(30)
    if len(described.members) != 2:
        problems.append(f"DescribeGroups shows {len(described.members)} members, expected 2")
    for consumer in consumers:
        consumer.close()
    checker = Consumer(dict(config, **{"client.id": "checker"}))
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    committed = {tp.partition: tp.offset for tp in checker.committed(partitions, timeout=30)}
    for p in range(PARTITIONS):
        low, high = checker.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if committed.get(p) != high:
            problems.append(f"partition {p}: committed {committed.get(p)}, end {high}")
    checker.close()
    return problems


def main():
    client, bootstrap, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    run = {"kafka-python": kafka_python, "confluent": confluent, "confluent-group": confluent_group}[client]
    problems = run(bootstrap, topic, count)
    if problems:
        print("\n".join(problems[:20]))
        sys.exit(1)
    print(f"{client}: {count} records acknowledged and read back once, in order")


if __name__ == "__main__":
    main()
