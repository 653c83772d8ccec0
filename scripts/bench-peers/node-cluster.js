// The Node.js peers for scripts/bench: Node's cluster module with two workers answering GET /ping,
// either with the plain http module or with express (the original course's stack).
//
//   node node-cluster.js http PORT
//   node node-cluster.js express PORT     (needs express on NODE_PATH)
const cluster = require('node:cluster');
const http = require('node:http');

const [kind, port] = process.argv.slice(2);
const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  let ready = 0;
  for (let i = 0; i < workers; i++) {
    cluster.fork().on('listening', () => {
      ready += 1;
      if (ready === workers) console.log(`listening on 127.0.0.1:${port}`);
    });
  }
} else if (kind === 'express') {
  const express = require('express');
  const app = express();
  app.get('/ping', (req, res) => res.type('text/plain').send('pong\n'));
  app.listen(Number(port), '127.0.0.1');
} else {
  http
    .createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('pong\n');
    })
    .listen(Number(port), '127.0.0.1');
}
