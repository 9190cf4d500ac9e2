"""Real Kafka clients against a running Keel (driven by broker/tests/kafka_clients.rs).

usage: kafka_clients.py {kafka-python|confluent} BOOTSTRAP TOPIC RECORDS

Creates TOPIC (3 partitions) with the client's admin API, produces RECORDS
records with acks=all, reads every partition back from offset 0 and checks
that every acknowledged record is there once, in order per partition. Exits 0
on success; prints what went wrong and exits 1 otherwise.

Idempotence is off: Keel does not serve InitProducerId yet (issue 5), and
both clients would otherwise wait for a producer id.
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


def kafka_python(bootstrap, topic, count):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=-1)])
    if topic not in admin.list_topics():
        return [f"{topic} not listed after create"]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
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
    return check(acked, consumed)


def confluent(bootstrap, topic, count):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)]).values():
        future.result(60)
    if topic not in admin.list_topics(timeout=30).topics:
        return [f"{topic} not listed after create"]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False})
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
    return check(acked, consumed)


def main():
    client, bootstrap, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    run = {"kafka-python": kafka_python, "confluent": confluent}[client]
    problems = run(bootstrap, topic, count)
    if problems:
        print("\n".join(problems[:20]))
        sys.exit(1)
    print(f"{client}: {count} records acknowledged and read back once, in order")


if __name__ == "__main__":
    main()
