// OpenAI-style error bodies: {"error": {"message", "type", "param", "code"}}, one class per case.
import { EngineFailedError, EngineUnavailableError } from '../engine/engine.ts';

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 413 | 429 | 500 | 503,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const invalidRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, 'invalid_request_error', param, code);

export const contextLengthExceeded = (limit: number, prompt: number, completion: number, param = 'messages') =>
  new ApiError(
    400,
    `This model's maximum context length is ${limit} tokens. However, you requested ${prompt + completion} tokens ` +
      `(${prompt} in the ${param === 'messages' ? 'messages' : 'prompt'}, ${completion} in the completion). ` +
      `Please reduce the length of the ${param === 'messages' ? 'messages' : 'prompt'} or completion.`,
    'invalid_request_error',
    param,
    'context_length_exceeded',
  );

/** The prompt alone is known to exceed the budget (a lower bound, found before or while tokenizing). */
export const contextLengthExceededAtLeast = (limit: number, minPrompt: number, completion: number, param = 'messages') => {
  const what = param === 'messages' ? 'messages' : 'prompt';
  return new ApiError(
    400,
    `This model's maximum context length is ${limit} tokens. However, you requested at least ${minPrompt + completion} tokens ` +
      `(at least ${minPrompt} in the ${what}, ${completion} in the completion). Please reduce the length of the ${what} or completion.`,
    'invalid_request_error',
    param,
    'context_length_exceeded',
  );
};

export const originNotAllowed = (origin: string) =>
  new ApiError(403, `Origin ${JSON.stringify(origin.slice(0, 200))} is not allowed (see --allowed-origins).`, 'invalid_request_error', null, 'origin_not_allowed');

export const unauthorized = () =>
  new ApiError(401, 'Incorrect API key provided. Pass it as "Authorization: Bearer <key>".', 'invalid_request_error', null, 'invalid_api_key');

export const modelNotFound = (model: string) =>
  new ApiError(404, `The model \`${model}\` does not exist.`, 'invalid_request_error', 'model', 'model_not_found');

export const unknownUrl = (method: string, path: string) =>
  new ApiError(404, `Unknown request URL: ${method} ${path}.`, 'invalid_request_error', null, 'unknown_url');

export const bodyTooLarge = (limit: number) =>
  new ApiError(413, `Request body too large: the limit is ${limit} bytes.`, 'invalid_request_error', null, 'request_too_large');

export const overloaded = () =>
  new ApiError(429, 'Model is overloaded: too many requests are waiting. Please retry later.', 'rate_limit_error', null, 'overloaded');

export const unavailable = (why: string) => new ApiError(503, why, 'unavailable_error', null, 'service_unavailable');

export const internalError = () => new ApiError(500, 'Internal server error.', 'server_error', null, 'internal_error');

/**
 * Engine failures as OpenAI errors: the runner failed under an in-flight request (500, code
 * model_failure, naming the cause), or new requests while it is being restarted or is gone (503).
 */
export function engineError(err: unknown): ApiError | null {
  if (err instanceof EngineFailedError) {
    return new ApiError(500, `The model failed while computing this request (${err.cause.name}: ${err.cause.message}). `
      + (err.recovering ? 'The server is restarting the model; please retry shortly.' : 'The server cannot continue.'), 'server_error', null, 'model_failure');
  }
  if (err instanceof EngineUnavailableError) return new ApiError(503, `${err.message[0]!.toUpperCase()}${err.message.slice(1)}.`, 'unavailable_error', null, 'model_unavailable');
  return null;
}

/** Any error as the ApiError a response carries (unknown ones become a generic 500). */
export const toApiError = (err: unknown): ApiError => (err instanceof ApiError ? err : engineError(err) ?? internalError());
