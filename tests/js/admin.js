// kafkajs (2.2.4) admin, producer and consumer against a broker, as a Node.js application
// uses them; prints one JSON object of what it saw. Driven by tests/python/test_kafkajs.py:
//   node admin.js HOST:PORT TOPIC
'use strict';
const { Kafka, CompressionTypes, ConfigResourceTypes, logLevel } = require('kafkajs');

async function main() {
  const [bootstrap, topic] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: 'spate-kafkajs', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  const out = {};
  out.created = await admin.createTopics({
    topics: [{
      topic, numPartitions: 2, replicationFactor: 1,
      configEntries: [
        { name: 'compression.type', value: 'gzip' },
        { name: 'message.timestamp.after.max.ms', value: '3600000' },
        { name: 'segment.index.bytes', value: '10485760' },
      ],
    }],
    waitForLeaders: true,
  });
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  out.partitions = md.topics[0].partitions.length;
  await admin.alterConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [
      { name: 'retention.ms', value: '3600000' },
      { name: 'compression.type', value: 'gzip' },
    ] }],
  });
  const described = await admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false,
  });
  out.configs = Object.fromEntries(
    described.resources[0].configEntries.map((c) => [c.configName, c.configValue]));
  const broker = await admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.BROKER, name: '0', configNames: ['log.retention.ms', 'compression.type'] }],
    includeSynonyms: true,
  });
  out.broker = Object.fromEntries(
    broker.resources[0].configEntries.map((c) => [c.configName, c.configValue]));

  const producer = kafka.producer();
  await producer.connect();
  const now = Date.now();
  await producer.send({
    topic, compression: CompressionTypes.None, acks: -1,
    messages: Array.from({ length: 10 }, (_, i) => ({ partition: 0, key: `k${i}`, value: `v${i}`, timestamp: String(now + i) })),
  });
  try {
    await producer.send({ topic, acks: -1, messages: [{ partition: 0, value: 'future', timestamp: String(now + 3 * 3600 * 1000) }] });
    out.future = 'accepted';
  } catch (e) {
    out.future = e.type || e.name;
  }
  await producer.disconnect();

  out.offsets = await admin.fetchTopicOffsets(topic);
  out.byTimestamp = await admin.fetchTopicOffsetsByTimestamp(topic, now + 5);
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '2' }] });
  out.afterDelete = await admin.fetchTopicOffsets(topic);
  await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] });
  out.partitionsAfter = (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length;
  const cluster = await admin.describeCluster();
  out.brokers = cluster.brokers.map((b) => b.nodeId);

  const consumer = kafka.consumer({ groupId: `spate-kafkajs-${now}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${seen.length} of 8`)), 30000);
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        seen.push([partition, Number(message.offset), message.value.toString()]);
        if (seen.length >= 8) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  out.consumed = seen;
  await consumer.disconnect();
  out.groups = (await admin.listGroups()).groups.map((g) => g.groupId).filter((g) => g.startsWith('spate-kafkajs-'));
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
