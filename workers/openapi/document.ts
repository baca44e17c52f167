/**
 * The edge's OpenAPI 3.1 document (`GET /openapi.json`, docs/api.md
 * "Every route of the edge"): one module per route family, mirroring
 * workers/routes/, joined here with the security schemes (a bearer key per
 * role, the provider's heartbeat token), the headers the routes read and
 * send, and the error bodies of each family. Built and serialised once per
 * isolate. test/workers/openapi/ checks it against the routes the app
 * registers and against the routes' own validators.
 */

import { HEADER_LENGTH_HEADER } from '../../shared/binary.ts';
import { REGIONS } from '../../shared/regions.ts';
import { admin } from './admin.ts';
import { about, ERROR_CODES, int, obj, operation, ref, str, type Family, type Method, type Schema } from './build.ts';
import { disputes } from './disputes.ts';
import { health } from './health.ts';
import { huggingface } from './huggingface.ts';
import { oip } from './oip.ts';
import { openai } from './openai.ts';
import { providers } from './providers.ts';
import { settlement } from './settlement.ts';
import { status } from './status.ts';

/** This document's own route. */
const self: Family = {
  tag: 'Public',
  paths: {
    '/openapi.json': {
      get: { summary: 'This document', see: 'Conventions, "OpenAPI"', ok: { 200: { json: obj({ openapi: { const: '3.1.0' } }), headers: ['cache-control'] } } },
    },
  },
};

export const FAMILIES: readonly Family[] = [oip, openai, huggingface, providers, settlement, disputes, status, admin, health, self];

const bearer = (description: string) => ({ type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description });
const key = (role: string) => bearer(`A mesh-key+jwt with role ${role}, issued with POST /admin/keys (section 2.1).`);
const header = (description: string, schema: Schema = str()) => ({ description, schema });
const param = (name: string, description: string, schema: Schema = str()) => ({ name, in: 'header', description, schema });

function build(): Schema {
  const paths: Record<string, Partial<Record<Method, Schema>>> = {};
  const responses: Record<string, Schema> = {};
  const code = ref('ErrorCode');
  const schemas: Record<string, Schema> = {
    ErrorCode: about({ enum: ERROR_CODES }, 'section 2.9; each code has one status'),
    MeshError: obj({ error: obj({ code, message: str() }, {}, true) }, {}, true),
    OpenAIError: obj({ error: obj({ message: str(), type: str(), param: { type: ['string', 'null'] }, code }, {}, true) }, {}, true),
    HuggingFaceError: obj({ error: str(), code }, {}, true),
  };
  for (const family of FAMILIES) {
    Object.assign(schemas, family.schemas);
    for (const [path, methods] of Object.entries(family.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        (paths[path] ??= {})[method as Method] = { operationId: `${method}${path.replace(/\W+/g, '_')}`.replace(/_$/, ''), ...operation(path, op, family.tag, responses) };
      }
    }
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Edge inference mesh',
      version: '1',
      description: 'The contract is docs/api.md; each operation names its section. Errors are MeshError, OpenAIError on /v1/embeddings and /v1/models, HuggingFaceError on /models.',
    },
    tags: [...new Set(FAMILIES.map((f) => f.tag))].map((name) => ({ name })),
    paths,
    components: {
      schemas,
      responses,
      securitySchemes: {
        consumerKey: key('consumer'),
        billingKey: key('billing'),
        adminToken: key('admin'),
        providerKey: key('provider'),
        heartbeatToken: bearer("A mesh-heartbeat+jwt signed with the provider's key over the exact body (body_sha256, seq: section 3.2)."),
      },
      headers: {
        'x-request-id': header("The request's id, chosen by the edge (section 2.12).", str({ format: 'uuid' })),
        'retry-after': header('Seconds to wait before asking again.', int({ minimum: 0 })),
        'www-authenticate': header('Bearer error="invalid_request" (no key) or error="invalid_token".'),
        'cache-control': header('public, max-age=...'),
        'x-mesh-receipt': header('The signed receipt (mesh-receipt+jwt, section 4).'),
        'x-mesh-region': header('The region that served it; huggingface for the fallback.'),
        'x-mesh-backend': header('The backend that served it.'),
        'x-mesh-cache': header('Whether the answer cache answered (section 2.13).', { enum: ['hit', 'miss', 'bypass'] }),
        'server-timing': header('edge;dur=<ms>, backend;dur=<ms>, total;dur=<ms>'),
        [HEADER_LENGTH_HEADER]: header('The JSON header\'s length in a binary tensor extension answer.', int({ minimum: 2 })),
      },
      parameters: {
        'x-mesh-region': param('x-mesh-region', 'Serve only in this region (section 2.3).', { enum: REGIONS.map((r) => r.id) }),
        'x-mesh-verify': param('x-mesh-verify', 'Verification mode (section 6); default sampled.', { enum: ['none', 'sampled', 'redundant'] }),
        'x-mesh-dev-colo': param('x-mesh-dev-colo', 'MESH_DEV only: act as this PoP (IATA code, section 1).', str({ pattern: '^[A-Za-z]{3}$' })),
        'x-wait-for-model': param('x-wait-for-model', 'How long to wait for capacity: true 30 s, false none; default 5 s (section 2.7).', {
          enum: ['true', 'false', '1', '0'],
        }),
        'cache-control': param('cache-control', 'no-store: bypass the answer cache; no-cache: compute a fresh answer (section 2.13).', str()),
        [HEADER_LENGTH_HEADER]: param(HEADER_LENGTH_HEADER, 'The binary tensor extension: the JSON header\'s byte length (section 2.4).', str({ pattern: '^[0-9]{1,10}$' })),
      },
    },
  };
}

let text: string | undefined;

/** The document, serialised (built on the first call in this isolate). */
export function openApiText(): string {
  return (text ??= JSON.stringify(build()));
}
