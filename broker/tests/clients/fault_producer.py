"""An idempotent confluent-kafka producer across a SIGKILL of a partition
leader (driven by broker/tests/kafka_fault.rs).

usage: fault_producer.py BOOTSTRAP TOPIC PARTITIONS RECORDS

Creates TOPIC, then produces RECORDS records with acks=all and idempotence
on, paced so that the kill lands while records are in flight: it prints
"HALFWAY" once half are acknowledged (the test kills the leader then and
restarts it), keeps producing, waits for every delivery report, then reads
every partition from offset 0 and checks that every acknowledged record is
there exactly once, at the offset it was acknowledged at, in order per
partition, and that no record was written twice. Exits 0 on success; prints
what went wrong and exits 1 otherwise.
"""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, config={"min.insync.replicas": "2"})]).values():
        future.result(60)
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 120000,
    })
    acked, failed = {}, []

    def delivered(error, message):
        if error is not None:
            failed.append(str(error))
        else:
            acked.setdefault(message.partition(), []).append((message.offset(), message.value()))

    halfway_said = False
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=f"r-{i:06d}".encode(), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 100 == 99:
            # 100 records every 40 ms or more: the run spans the kill and the restart.
            producer.poll(0)
            time.sleep(0.04)
        if not halfway_said and sum(len(v) for v in acked.values()) >= count // 2:
            print("HALFWAY", flush=True)
            halfway_said = True
    if producer.flush(180) != 0:
        print("records still unacknowledged after 180 s")
        sys.exit(1)
    if not halfway_said:
        print("HALFWAY", flush=True)
    total_acked = sum(len(v) for v in acked.values())
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-check", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=60)[1] for p in range(partitions)}
    read, deadline = {}, time.time() + 120
    while sum(len(v) for v in read.values()) < sum(ends.values()) and time.time() < deadline:
        for message in consumer.consume(num_messages=1000, timeout=1):
            if message.error():
                print(f"consumer error: {message.error()}")
                sys.exit(1)
            read.setdefault(message.partition(), []).append((message.offset(), message.value()))
    consumer.close()
    problems = []
    all_values = [value for records in read.values() for _, value in records]
    if len(all_values) != len(set(all_values)):
        problems.append(f"{len(all_values) - len(set(all_values))} records were written twice")
    for partition, records in acked.items():
        at = dict(read.get(partition, []))
        for offset, value in records:
            if at.get(offset) != value:
                problems.append(f"partition {partition} offset {offset}: acknowledged {value!r}, read {at.get(offset)!r}")
        order = [int(value[2:]) for _, value in read.get(partition, [])]
        if order != sorted(order):
            problems.append(f"partition {partition}: records out of order")
    if problems:
        print("\n".join(problems[:20]))
        sys.exit(1)
    print(f"{total_acked} of {count} records acknowledged ({len(failed)} failed for good: {failed[:3]}); all read back once, in order")


if __name__ == "__main__":
    main()
