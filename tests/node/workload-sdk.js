// workload-sdk.js — the unmodified Azure IoT Node SDK as a module of ledge: configured only by
// the IOTEDGE_* environment ledged injects, it takes the SDK's IoT Edge path
// (ModuleClient.fromEnvironment → IotEdgeAuthenticationProvider: trust bundle and signatures from
// the workload socket) and prints, as JSON lines on stdout, what the SDK would hand MQTT.js for
// its CONNECT: URI, client id, user name, the SAS token as password and the trust bundle as `ca`.
// It does not connect: the MQTT provider under the SDK's transport is replaced by a recorder, so
// what is printed is exactly what the SDK would send. Then it idles until stopped.
'use strict';
const { EventEmitter } = require('events');
const { ModuleClient, IotEdgeAuthenticationProvider } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');

function emit(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

// Stands in for MQTT.js's module (MqttBase.mqttProvider): records connect() and fails it.
function recordingProvider(onConnect) {
  return {
    connect(uri, options) {
      onConnect(uri, options);
      const fake = new EventEmitter();
      fake.end = (...args) => {
        const cb = args.find((a) => typeof a === 'function');
        if (cb) process.nextTick(cb);
        return fake;
      };
      fake.removeAllListeners = EventEmitter.prototype.removeAllListeners.bind(fake);
      process.nextTick(() => fake.emit('error', new Error('ledge test: recorded, not connecting')));
      return fake;
    },
  };
}

async function main() {
  emit('env', {
    deviceId: process.env.IOTEDGE_DEVICEID,
    moduleId: process.env.IOTEDGE_MODULEID,
    generationId: process.env.IOTEDGE_MODULEGENERATIONID,
    iothubHostName: process.env.IOTEDGE_IOTHUBHOSTNAME,
    gatewayHostName: process.env.IOTEDGE_GATEWAYHOSTNAME,
    workloadUri: process.env.IOTEDGE_WORKLOADURI,
  });
  // The SDK's own edge path: reads the environment, fetches the trust bundle from the workload
  // API and gives it to the transport as its `ca`.
  const client = await ModuleClient.fromEnvironment(Mqtt);
  client.setRetryPolicy(new NoRetry());
  const transport = client._transport;
  const auth = transport._authenticationProvider;
  if (!(auth instanceof IotEdgeAuthenticationProvider))
    throw new Error(`expected the IoT Edge authentication provider, got ${auth.constructor.name}`);

  // open() fails by design once the CONNECT options are recorded; failing before that (e.g. the
  // workload API refused to sign) is the error to report.
  const { uri, options } = await new Promise((resolve, reject) => {
    let done = false;
    transport._mqtt.mqttProvider = recordingProvider((uri, options) => {
      done = true;
      resolve({ uri, options });
    });
    client.open().catch((err) => {
      if (!done) reject(err);
    });
  });
  emit('connect', {
    authProvider: auth.constructor.name,
    uri,
    clientId: options.clientId,
    username: options.username,
    password: options.password,
    ca: options.ca,
  });

  // The provider's own trust bundle call, for comparison with what the transport got.
  const bundle = await new Promise((resolve, reject) =>
    auth.getTrustBundle((err, ca) => (err ? reject(err) : resolve(ca))));
  emit('trust-bundle', { pem: bundle });
  emit('ready', {});
  setInterval(() => {}, 1 << 30);
}

main().catch((err) => {
  emit('error', { message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
