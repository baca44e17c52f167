/**
 * The 16-bit float formats of the Open Inference Protocol, as bit patterns
 * in a number (what a Uint16Array holds): IEEE 754 binary16 (`FP16`: 1 sign,
 * 5 exponent, 10 fraction bits) and bfloat16 (`BF16`: the top half of a
 * float32: 1 sign, 8 exponent, 7 fraction bits). A number becomes the
 * nearest pattern, ties to even, subnormals included, straight from the
 * double (no float32 step, which would round twice); a pattern becomes the
 * number it denotes, exactly.
 */

/** The largest finite FP16 value. */
export const FP16_MAX = 65504;
/** The largest finite BF16 value: (2 − 2⁻⁷) × 2¹²⁷. */
export const BF16_MAX = 3.3895313892515355e38;

/** `x` rounded to an integer, ties to even (`x` a non-negative double below 2⁵³). */
function roundEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}

/** The exponent e with 2^e ≤ a < 2^(e+1), for a positive finite double. */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  return e;
}

/**
 * The bit pattern of the binary float with `fraction` fraction bits and
 * `exponent` exponent bits nearest to `v` (ties to even); beyond the largest
 * finite value (after rounding) an infinity, NaN a quiet NaN.
 */
function encode(v: number, fraction: number, exponent: number): number {
  const bias = (1 << (exponent - 1)) - 1;
  const infinity = ((1 << exponent) - 1) << fraction;
  const sign = v < 0 || Object.is(v, -0) ? 1 << (fraction + exponent) : 0;
  if (Number.isNaN(v)) return infinity | (1 << (fraction - 1));
  const a = Math.abs(v);
  if (a === Infinity) return sign | infinity;
  const minNormal = 1 - bias;
  // Subnormal (or zero): a whole number of the smallest step 2^(minNormal - fraction); rounding up to 2^fraction steps gives the smallest normal's pattern.
  if (a < 2 ** minNormal) return sign | roundEven(a * 2 ** (fraction - minNormal));
  const e = exponentOf(a);
  if (e > bias) return sign | infinity;
  // a × 2^(fraction − e) is in [2^fraction, 2^(fraction+1)): exact (a power-of-two scaling); a carry out of the fraction lands in the exponent.
  const bits = ((e + bias) << fraction) + roundEven(a * 2 ** (fraction - e)) - (1 << fraction);
  return sign | Math.min(bits, infinity);
}

/** The FP16 bit pattern nearest to `v` (ties to even, subnormals included). */
export function toFp16Bits(v: number): number {
  return encode(v, 10, 5);
}

/** The BF16 bit pattern nearest to `v` (ties to even, subnormals included). */
export function toBf16Bits(v: number): number {
  return encode(v, 7, 8);
}

/** The number an FP16 bit pattern denotes (exact; NaN and ±Infinity for those patterns). */
export function fp16Value(bits: number): number {
  const exp = (bits >>> 10) & 0x1f;
  const frac = bits & 0x3ff;
  const sign = bits & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (frac + 1024) * 2 ** (exp - 25);
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** The number a BF16 bit pattern denotes (exact: the float32 whose top half it is). */
export function bf16Value(bits: number): number {
  scratchBits[0] = (bits & 0xffff) << 16;
  return scratch[0]!;
}

/** Whether an FP16 bit pattern is finite (its exponent is not all ones). */
export const fp16Finite = (bits: number): boolean => (bits & 0x7c00) !== 0x7c00;

/** Whether a BF16 bit pattern is finite (its exponent is not all ones). */
export const bf16Finite = (bits: number): boolean => (bits & 0x7f80) !== 0x7f80;
