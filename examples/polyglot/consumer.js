// The shipping service, in Node.js. It knows nothing of eventscope: its only tracing is
// the stock OpenTelemetry SDK with @opentelemetry/instrumentation-amqplib, exporting
// OTLP/HTTP to the collector. It consumes OrderPlaced (published by the Python service
// with eventscope's hooks) and publishes ShipmentScheduled (consumed by Python again).
//
//   AMQP_URL=amqp://guest:guest@127.0.0.1:5672 QUEUE=… SHIPMENTS=… NACK_ORDER=4 \
//   COLLECTOR=http://127.0.0.1:4318 node consumer.js
'use strict';

const { NodeTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { AmqplibInstrumentation } = require('@opentelemetry/instrumentation-amqplib');

const collector = process.env.COLLECTOR || 'http://127.0.0.1:4318';
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'shipping-node' }),
  spanProcessors: [
    new BatchSpanProcessor(new OTLPTraceExporter({ url: `${collector}/v1/traces` }), {
      scheduledDelayMillis: 200,
    }),
  ],
});
provider.register(); // W3C trace context + baggage propagation, async context
registerInstrumentations({ instrumentations: [new AmqplibInstrumentation()] });
const amqp = require('amqplib'); // after the instrumentation is registered
const crypto = require('node:crypto');

async function main() {
  const connection = await amqp.connect(process.env.AMQP_URL);
  const channel = await connection.createChannel();
  const nackOrder = Number(process.env.NACK_ORDER || 0);
  let handled = 0;
  await channel.consume(process.env.QUEUE, (msg) => {
    const order = JSON.parse(msg.content.toString());
    handled += 1;
    if (order.number === nackOrder) {
      channel.nack(msg, false, false); // cannot ship it: drop it (no requeue)
    } else {
      const shipment = Buffer.from(JSON.stringify({ number: order.number }));
      channel.publish(process.env.SHIPMENTS, '', shipment, {
        messageId: crypto.randomUUID(), // the event id eventscope's hooks read on the other side
        contentType: 'application/json',
      });
      channel.ack(msg);
    }
    console.log(`handled ${handled}`);
  });
  console.log('ready');
  const stop = async () => {
    await channel.close();
    await connection.close();
    await provider.shutdown(); // export what is buffered
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
