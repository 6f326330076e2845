/**
 * A succeeded task's intermediates: what preprocess, infer and encode wrote under
 * `tasks/<id>/<stage>/`. Once publish's transaction has committed the task's SUCCEEDED record
 * nothing reads them again (publish copied the video to `videos/<id>.mp4`), so notify, which only
 * ever sees committed records, removes them. The task's inputs (`tasks/<id>/input/`) and the
 * published video stay until retention; a FAILED task keeps everything (a DLQ replay needs it).
 */
import { validatePrefix, type BlobStore } from '../blob/store.js';
import { taskBlobPrefix } from '../domain/paths.js';

/** The stages whose outputs under `tasks/<id>/<stage>/` are intermediates. */
export const INTERMEDIATE_STAGES = ['preprocess', 'infer', 'encode'] as const;

/** Deletes a task's intermediates; returns how many blobs went. Deleting again finds nothing. */
export async function dropIntermediates(blob: BlobStore, taskId: string): Promise<number> {
  let n = 0;
  for (const stage of INTERMEDIATE_STAGES) {
    const keys: string[] = [];
    for await (const e of blob.list(validatePrefix(`${taskBlobPrefix(taskId)}${stage}/`))) keys.push(e.key);
    for (const key of keys) {
      await blob.delete(key);
      n += 1;
    }
  }
  return n;
}
