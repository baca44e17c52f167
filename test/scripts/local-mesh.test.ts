import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePorts } from '../../scripts/local-mesh.ts';

describe('freePorts', () => {
  it('gives distinct loopback ports, each free to listen on once it returns', async () => {
    const ports = await freePorts(24);
    expect(new Set(ports).size).toBe(24);
    const servers = await Promise.all(
      ports.map(
        (port) =>
          new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
            const srv = createServer();
            srv.once('error', reject);
            srv.listen(port, '127.0.0.1', () => resolve(srv));
          }),
      ),
    );
    await Promise.all(servers.map((srv) => new Promise((resolve) => srv.close(resolve))));
  });
});
