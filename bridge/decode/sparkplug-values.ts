/**
 * Sparkplug metric values to uns-bridge values, exactly and within bounds: scalars per datatype, bytes,
 * DataSets and Templates (nested up to maxDepth), every string and bytes value at most maxValueBytes.
 */
import { Buffer } from 'node:buffer';
import type { JsonValue, Value } from '../../src/core/index.js';
import { type WireValueHolder, type WireDataSet, type WireTemplate, type WireMetric, datatypeName, fromUint32, fromUint64, ConvertError } from './sparkplug-wire.js';

export class SparkplugValues {
  constructor(private readonly maxValueBytes: number, private readonly maxDepth: number) {}

  /**
   * A metric's value. `json` is set inside DataSet/Template, where values must be JsonValue: bytes become
   * base64 strings there. Extension values and PropertySet-typed metrics (Metric has no field for them)
   * convert to null.
   */
  metricValue(m: WireMetric, datatype: number, depth: number, json: boolean): Value | ConvertError {
    const s = this.scalar(m, datatype);
    if (s !== undefined) return s;
    if (m.bytesValue != null) {
      const b = m.bytesValue;
      if (b.length > this.maxValueBytes) return new ConvertError('UNS_ERR_PAYLOAD_TOO_LARGE', `bytes value of ${b.length} bytes`);
      // A view, not a copy: the point keeps the payload's memory alive, which is bounded by maxBytes.
      return json ? Buffer.from(b.buffer, b.byteOffset, b.length).toString('base64') : new Uint8Array(b.buffer, b.byteOffset, b.length);
    }
    if (m.datasetValue != null) return this.dataSet(m.datasetValue);
    if (m.templateValue != null) return this.template(m.templateValue, depth + 1);
    return null;
  }

  /** Scalars from the shared value fields, or undefined when none is set. A Float is widened exactly to a
   * double (0.1f reads 0.10000000149011612): finding the shortest float32 decimal costs too much per metric. */
  scalar(h: WireValueHolder, datatype: number): number | bigint | boolean | string | ConvertError | undefined {
    if (h.intValue != null) return fromUint32(h.intValue, datatype);
    if (h.longValue != null) return fromUint64(h.longValue, datatype);
    if (h.doubleValue != null) return h.doubleValue;
    if (h.floatValue != null) return h.floatValue;
    if (h.booleanValue != null) return h.booleanValue;
    if (h.stringValue != null) return this.checkString(h.stringValue);
    return undefined;
  }

  checkString(s: string): string | ConvertError {
    if (s.length > this.maxValueBytes) return new ConvertError('UNS_ERR_PAYLOAD_TOO_LARGE', `string value of ${s.length} characters`);
    // PostgreSQL text and jsonb cannot hold U+0000.
    if (s.includes('\u0000')) return new ConvertError('UNS_ERR_PAYLOAD_NUL', 'string value holds U+0000');
    return s;
  }

  /** DataSet -> { columns, types, rows } with one JSON value per cell (null where a cell has none). */
  dataSet(ds: WireDataSet): JsonValue | ConvertError {
    const columns: JsonValue[] = [];
    for (const c of ds.columns) {
      const checked = this.checkString(c);
      if (checked instanceof ConvertError) return checked;
      columns.push(checked);
    }
    const types: JsonValue[] = ds.types.map(datatypeName);
    const rows: JsonValue[] = [];
    for (const row of ds.rows) {
      const cells: JsonValue[] = [];
      for (let i = 0; i < row.elements.length; i++) {
        const cell = this.scalar(row.elements[i] as WireValueHolder, ds.types[i] ?? 0);
        if (cell instanceof ConvertError) return cell;
        cells.push(cell ?? null);
      }
      rows.push(cells);
    }
    return { columns, types, rows };
  }

  /** Template -> { templateRef?, version?, isDefinition?, parameters: {name: value}, metrics: {name: value} }. */
  template(t: WireTemplate, depth: number): JsonValue | ConvertError {
    if (depth > this.maxDepth) return new ConvertError('UNS_ERR_PAYLOAD_TOO_DEEP', `templates nest deeper than ${this.maxDepth}`);
    const out: { [key: string]: JsonValue } = {};
    if (Object.hasOwn(t, 'templateRef')) out['templateRef'] = t.templateRef as string;
    if (Object.hasOwn(t, 'version')) out['version'] = t.version as string;
    if (Object.hasOwn(t, 'isDefinition')) out['isDefinition'] = t.isDefinition as boolean;
    const parameters: { [key: string]: JsonValue } = {};
    for (const p of t.parameters) {
      const v = this.scalar(p, p.type ?? 0);
      if (v instanceof ConvertError) return v;
      const key = this.checkString(p.name ?? '');
      if (key instanceof ConvertError) return key;
      setKey(parameters, key, v ?? null);
    }
    const metrics: { [key: string]: JsonValue } = {};
    for (const m of t.metrics) {
      const v = m.isNull === true ? null : this.metricValue(m, m.datatype ?? 0, depth, true);
      if (v instanceof ConvertError) return v;
      const key = this.checkString(m.name ?? '');
      if (key instanceof ConvertError) return key;
      setKey(metrics, key, v as JsonValue);
    }
    out['parameters'] = parameters;
    out['metrics'] = metrics;
    return out;
  }
}

function setKey(obj: { [key: string]: JsonValue }, key: string, value: JsonValue): void {
  if (key === '__proto__') {
    Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}
